"""Data sets: the MedMNIST registry (registry), --dataset sources (sources: flags, npz files, folders of scans),
the DataModule (datamodule), the uint8 caches (cache, npy_stream, scans/), prefetching, synthetic stand-ins."""
