"""`python -m operatord.apiserver`: run the embedded API server (what `ApiServer` spawns)."""

import sys

from operatord.apiserver.process import main

sys.exit(main())
