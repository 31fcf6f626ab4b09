import sys

from memproxyd.daemon import main

sys.exit(main())
