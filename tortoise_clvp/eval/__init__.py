"""Quality measurements that need an independent judge (an ASR): the `eval` extra."""
