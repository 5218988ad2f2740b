"""warehouse.ingest"""
