"""Loaded at start-up by every Python process the test suite starts (tests/conftest.py puts this
directory on PYTHONPATH). At exit, after every atexit handler (logging's flush among them),
the objects still alive are frozen (`gc.freeze`, public and documented), so the interpreter's
final garbage collections skip them: a process that imported torch, scikit-learn and
torch._dynamo spends about 1.5 of its 2 s of teardown there, and the suite starts hundreds of
them. Nothing a test checks happens in those collections: by then every file l1sweep writes is
closed and the logs are flushed. (`python -m sweep.run` does the same since issue 33, after
closing its storages; this covers every other process the suite starts.)
"""

import atexit
import gc

atexit.register(gc.freeze)  # registered first, so it runs last
