"""gpt2suite tasks: task data, heads, adapters, fine-tuning, prompting, evaluation and the leaderboard."""
