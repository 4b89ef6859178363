"""Collection: everything a round does, from "which reads" to "which counts".

``rounds`` runs rounds (scrape and background modes) and folds them into snapshots; ``state``
keeps every tag's page state between rounds; ``model``, ``pages``, ``order``, ``fold`` and
``job`` are incremental collection (what is kept of a tag, where pages sit, the listing order,
folding reads in, one tag's round); ``statestore`` writes the page state to
``collection.state_file``. Data flows one way: the client answers pages, this package decides
which pages and what they count, the collector exports the snapshot.
"""
