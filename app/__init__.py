"""injixo-freshchat: Freshchat conversation events in, contact counts per source queue out."""
