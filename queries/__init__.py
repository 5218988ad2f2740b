"""warehouse.queries"""
