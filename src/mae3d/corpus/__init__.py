"""Corpus manifests: schema, builders (folder/BIDS, nnssl json, nnU-Net raw), filters, summaries."""
