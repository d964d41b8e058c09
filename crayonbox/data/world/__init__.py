"""The offline emoji world: scenes of 1–3 emoji with multilingual captions and exact ground truth.

    config.py     every bias knob, validated (default.yaml is the shipped world)
    catalog.py    emoji + CLDR names in en/hi/es/zh/ar from the shipped emoji_names.json.gz (make_names.py)
    render.py     Noto Color Emoji sprites (raqm), backgrounds, compositing, PNG encoding
    world.py      sampling scenes: pools, pairings, co-occurrences, layout
    describe.py   captions in five languages; lexicon.py and given_names.py hold the hand-written words
    sources.py    CC3M / CC12M / YFCC-like caption sources
    build.py      parallel, resumable builds into img2dataset shards (crayonbox.data.shards)

Entry points: `crayonbox world build`, or `build_world(load_world_config(path), out, n)`.
"""
