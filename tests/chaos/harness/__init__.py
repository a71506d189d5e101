"""The chaos harness: a restartable redis-server child, a fault-injecting TCP proxy, real worker processes,
a producer that keeps a ledger of every id it sent, and a checker that reads every output line.

Nothing here talks to a Redis it did not start: every server is our child and its pid is checked with
``INFO server`` before each admin connection is used.
"""
