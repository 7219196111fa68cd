"""`python -m tfrecords_builder {phantom,build,miccai2011} ...`"""

import sys

from tfrecords_builder.cli import main

if __name__ == "__main__":
    sys.exit(main())
