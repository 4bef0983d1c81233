"""DECTRIS Stream V2 building blocks: message types, CBOR codec, ZeroMQ receiver, simulator."""
