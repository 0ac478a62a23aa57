"""The 20-market load run of issue 10: the runtime end to end vs REST polling (same as `arbees load`).

    python scripts/load_20_markets.py [--markets 20] [--rate 20] [--duration 30] [--interval 1]
                                      [--workers 1] [--json FILE] [--png FILE]
"""

from broker.load_command import load

if __name__ == "__main__":
    load()
