"""``python -m corsproxy``."""

from corsproxy.cli import main

raise SystemExit(main())
