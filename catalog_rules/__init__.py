"""The catalog rules both services share: its vocabulary, how provider metadata becomes a catalog
entry, and the catalog file format. Pure: standard library only, no I/O."""
