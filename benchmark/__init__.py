"""The DOR-IQA benchmark harness: data, models, training, tracking, statistics and reports."""
