"""WhatsApp Executor: sends planned parcel notifications through Chatea, safely.

The package never imports from ``api/`` and creates nothing (settings, engines, clients)
at import time: cold starts on Vercel and the test suite both depend on that.
"""

__version__ = "0.1.0"
