"""defs/report"""
