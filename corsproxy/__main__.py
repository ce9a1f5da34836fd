"""``python -m corsproxy``."""

from corsproxy.cli.main import main

raise SystemExit(main())
