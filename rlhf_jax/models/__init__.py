"""Models: the GPT decoder and the heads that sit on its hidden states."""
