"""The requester role: accept jobs, place them on nodes, decide their outcome.

`node.Requester` orchestrates; `ledger.Ledger` holds the named transitions; `bidding` the bid
rounds; `logs` live output. Import them from their modules.
"""
