# Generated from proto/ by clients/python/scripts/gen_proto.py. Do not edit.
