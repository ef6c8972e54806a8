"""Download the paper's datasets, convert them to the layouts ``grft_app.data`` reads, and verify them.

One command per family, each with ``--check`` (verify a folder, change nothing):

    python -m data_prep.vtab --data-dir data [--tasks cifar100,dtd] [--check]
    python -m data_prep.fgvc --data-dir data [--tasks cub] [--check]
    python -m data_prep.glue --data-dir data [--tasks cola] [--check]

Heavy optional packages (tensorflow-datasets, datasets, scipy) are imported only by the download
and conversion steps that need them, with a message naming the pip extra that installs them.
"""
