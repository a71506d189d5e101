"""Reading what producers send: the parsers shared by the log decoder and the alert decoder."""
