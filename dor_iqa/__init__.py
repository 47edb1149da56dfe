"""DOR-IQA: deep ordinal regression for no-reference image quality assessment (corrected maths)."""
