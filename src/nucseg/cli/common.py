"""What every command module shares: the exit codes."""

EXIT_OK = 0
EXIT_FAILURES = 1  # the command ran, but some inputs failed
EXIT_USAGE = 2  # bad input: nothing (or nothing more) could be done
