"""defs/reconstruction"""
