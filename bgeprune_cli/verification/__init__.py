"""What `bgeprune verify` runs besides the stage itself: static checks of an export and its fresh-
process loader.
"""
