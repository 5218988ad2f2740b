"""warehouse.store"""
