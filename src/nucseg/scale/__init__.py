"""Scale-out: executors (in process or Dask), Dask clusters, block geometry and stitching."""
