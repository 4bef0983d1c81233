"""The control plane: the leash protocol between ``saxsleash`` and ``saxsdogserver``, and
the feeder channel from ``saxsfeeder``.

Modules: :mod:`.netconf` (``~/.saxsdognetwork``), :mod:`.signing` (v1 and v2 request
signatures), :mod:`.protocol` (frames, limits, replies, the JSON schemas in ``schemas/``),
:mod:`.server` (the ROUTER command server), :mod:`.client` (the lazy-pirate REQ client) and
:mod:`.feeder` (new-file events: watcher, publisher, subscriber).
"""
