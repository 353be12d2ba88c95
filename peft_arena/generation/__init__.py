"""Generative (SFT) tasks: the answer is text the model writes, not a head's class.

One job per module:

    models    which models can generate (an LM head), as a one-line error otherwise
    examples  a user's generative rows: prompt + completion columns, or chat `messages`
    prompts   a prompt rendered from the task's template (through the tokenizer's chat
              template where it has one) and tokenized apart from its completion, with
              truncation that cuts the user's text only
    collate   training batches: completion-only labels, right padding, or padding-free
              packing with a block-diagonal attention mask
    loss      the causal-LM loss with the LM head computed only where a label is
    decode    batched greedy decoding with the KV cache, timed
    scoring   generated answers scored: label accuracy, macro F1 and invalid share, label
              log-likelihoods, exact match and chrF for free text
"""
