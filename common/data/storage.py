"""How a data set's images are held (--data-storage): read into memory, or memory-mapped from a decoded cache.

Constants only, so that the command line imports them without torch (common.data.datamodule loads the data, common.data.cache
maps it).
"""
STORAGES = ("auto", "memory", "mmap")
IN_MEMORY_BYTES = 2 << 30  # ours: larger sets (uncompressed images) are memory-mapped from a cache (common/data/cache.py)
