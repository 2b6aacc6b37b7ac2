"""What the tests share: tiny MedMNIST-format data (fakedata), folders of scans (scans), checkpoints in the study's format
(study_format), TensorBoard event readers (events), and the DDP worker script test_ddp.py runs (ddp_worker)."""
