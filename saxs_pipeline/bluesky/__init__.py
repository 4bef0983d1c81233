"""The Bluesky source: a RunEngine's documents in, one reduced run per Bluesky run
(``saxsdog --bluesky``)."""
