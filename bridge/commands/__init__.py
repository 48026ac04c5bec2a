"""One module per `fse-bridge` command: HELP, add_arguments(parser), run(args) -> int."""
