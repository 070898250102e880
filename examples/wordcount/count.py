"""Word count, one shard at a time: for each text file this shard was given (under /inputs),
write its count to /outputs/<name>.count and print a line; `bacalhauctl get` merges every
shard's files and lines in shard order.

    bacalhauctl run python examples/wordcount/count.py -v examples/wordcount/texts:/inputs \\
        --sharding-glob-pattern '*.txt' --sharding-batch-size 2
"""

import os
import sys

shard = os.environ.get("BACALHAU_SHARD_INDEX", "-")
count = os.environ.get("BACALHAU_SHARD_COUNT", "-")
total = 0
for root, _, files in sorted(os.walk("/inputs")):
    for name in sorted(files):
        with open(os.path.join(root, name), encoding="utf-8") as f:
            words = len(f.read().split())
        total += words
        with open(f"/outputs/{name}.count", "w", encoding="utf-8") as out:
            out.write(f"{words}\n")
        print(f"{name}: {words}")
print(f"shard {shard} of {count}: {total} words", file=sys.stderr)
