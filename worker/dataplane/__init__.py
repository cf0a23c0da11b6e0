"""The Redis data plane's one owner: every key name (``keys``, its table in ``templates``), every Lua
script and the prelude they share (``scripts``, ``prelude``, ``lua/``), batch ids (``ids``) and where a
dedup mark lives (``marks``). Nothing outside this package writes a key template, a script or an id format.
"""
