"""Task modules: each maps vectorized data to captions, prices or transcripts."""
