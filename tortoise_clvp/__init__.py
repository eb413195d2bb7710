"""tortoise_clvp: a fast, faithful inference engine for the Tortoise text-to-speech pipeline."""
