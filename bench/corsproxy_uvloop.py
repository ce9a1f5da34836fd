"""`corsproxy ...` on uvloop, for the optional "corsproxy + uvloop" row of bench/run.py.

What a `[speed]` extra would do: the same CLI with uvloop's event loop policy set first.
"""

import asyncio
import sys

import uvloop

from corsproxy.cli import main

if __name__ == "__main__":
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    sys.exit(main())
