"""Allow ``python -m reflexblue``."""

from reflexblue.cli.main import main

main()
