"""Write a copy of a trained U-Net model folder with one more level, to fine-tune.

    python tools/deepen_model.py runs/dsb2018_s3/model runs/dsb2018_deep/model

The new folder holds a ``unet`` one downsampling step deeper (see
:func:`nucseg.models.deepen_unet`): the trained layers are copied and the new
coarsest encoder and decoder blocks are random, so the folder is a starting
point for ``nucseg train --init-from``, not a usable model. Its validation
scores and tuned thresholds are dropped, because they belong to the old network.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from nucseg.errors import NucsegError
from nucseg.io.atomic import OutputExistsError
from nucseg.models.folder import load_model_folder, save_model
from nucseg.models.networks import deepen_unet
from nucseg.postprocess.watershed import PostprocessConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="trained unet model folder, e.g. runs/dsb2018_s3/model")
    parser.add_argument("out", help="new model folder (must not exist)")
    args = parser.parse_args(argv)
    try:
        source = load_model_folder(args.model)
        deeper = deepen_unet(source.network)
        options = {**source.config.architecture_options, "depth": len(deeper.down)}
        config = dataclasses.replace(
            source.config,
            architecture_options=options,
            validation={},
            postprocess=PostprocessConfig().to_dict(),
            name="",
        )
        save_model(deeper, config, args.out, overwrite=False)
    except OutputExistsError:  # its own message suggests --overwrite, which this tool does not have
        return _fail(f"{args.out}: exists; give a new folder")
    except NucsegError as exc:
        return _fail(str(exc))
    except ValueError as exc:  # deepen_unet refuses other architectures and the maximum depth
        return _fail(f"{args.model}: {exc}")
    print(f"wrote {args.out}: unet {options} with the layers of {args.model}; fine-tune it with --init-from")
    return 0


def _fail(message: str) -> int:
    print(f"deepen_model: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
