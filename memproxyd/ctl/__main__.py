import sys

from memproxyd.ctl.cli import main

sys.exit(main())
