"""Curate step: PMC-VQA + MedMNIST-v2 -> validated, modality-balanced MCQ datasets (see run.py for the flow)."""
