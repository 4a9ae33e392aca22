"""What a user does with a trained model: its card, generations, the Hub push, the archive."""
