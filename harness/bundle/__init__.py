"""Offline bundles of vLLM and the wheels it needs, for air-gapped GPU nodes (docs/offline-bundle.md).

One module per job:

    install.py   the node's installer: install, stage, verify, show (standard library only; copied
                 alone into every bundle, run there as ``python3 install.py ...``)
    build.py     build a bundle: resolve → unpack → pack, the manifest
    resolve.py   fetch wheels (cache first, ``pip download``) and choose the dependency wheels
    unpack.py    install wheels into one site tree with ``installer``, dropping and compacting files
    fatbin.py    CUDA fat-binary compaction to one architecture
    pack.py      the tree's file list, the delta, the deterministic tar.xz and its parts
    defaults.py  the default dependency list, dropped files, the node's packages
    cli.py       the ``bundle`` command line (``run.py bundle``, ``python -m harness.bundle``)

Nothing is imported here, so that using the installer never imports the build side.
"""
