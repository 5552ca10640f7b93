"""defs/inputs"""
