"""Installers: put the daemon, the weights and the editor plugins in place."""
