"""defs/summaries"""
