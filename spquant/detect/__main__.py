import sys

from spquant.detect.cli import main

sys.exit(main())
