"""warehouse.analysis"""
