from hafen.cli import main

main()
