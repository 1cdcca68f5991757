from dfu_train.cli import main

main()
