"""One module per ``maskd`` subcommand (see ``server.cli``)."""
